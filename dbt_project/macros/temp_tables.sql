{#-
  Window functions over a product's whole history build internal temporary tables well past MariaDB's
  default 16 MB in-memory limit; on disk (Aria, in tmpdir) the full build is about twice as slow. This
  pre_hook raises the session's in-memory limit for the model's statements (var `temp_table_memory_mb`).
-#}
{% macro use_memory_temp_tables() -%}
    {%- set bytes = var('temp_table_memory_mb') * 1024 * 1024 -%}
    set session max_heap_table_size = {{ bytes }}, tmp_memory_table_size = {{ bytes }}
{%- endmacro %}
