# trellis_embed_migrations(service dir out_var)
# Turns dir/NNNN_name[.sqlite|.pg].sql files into a generated C file defining
#   const tr_migrations_t <service>_migrations;  (see kit/store.h)
# Files are applied in name order; NNNN is the schema version.
function(trellis_embed_migrations service dir out_var)
  file(GLOB sql_files CONFIGURE_DEPENDS ${dir}/*.sql)
  list(SORT sql_files)
  set(out ${CMAKE_BINARY_DIR}/generated/${service}_migrations.c)
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DSERVICE=${service} -DOUT=${out} "-DFILES=${sql_files}"
            -P ${PROJECT_SOURCE_DIR}/cmake/embed_sql.cmake
    DEPENDS ${sql_files} ${PROJECT_SOURCE_DIR}/cmake/embed_sql.cmake
    COMMENT "Embedding ${service} migrations"
    # The file list is ;-separated: without VERBATIM the shell would split it.
    VERBATIM)
  set(${out_var} ${out} PARENT_SCOPE)
endfunction()
