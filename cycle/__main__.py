import sys

from cycle.cli import main

sys.exit(main())
