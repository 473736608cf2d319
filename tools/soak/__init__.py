"""The soak: hourly cycles over replayed time with injected faults (issue 10), and what it is judged on.

``plan`` says which hours and faults, ``harness`` runs the cycles against a private MariaDB and the replay
server, ``checks`` reads the outcome, ``run`` ties them together (the tests, ``make soak`` and the benchmark
call it).
"""
