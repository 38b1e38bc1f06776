# Script mode helper: writes ${OUT}, a C file defining
#   const char ${SYMBOL}[];   the bytes of ${IN}, NUL-terminated
# so a file of the repository (deploy/routes.json) is compiled into the
# binary as it is, with no hand-kept copy to drift from it.
file(READ ${IN} hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE ${OUT} "/* Generated from ${IN_NAME}; do not edit. */\nconst char ${SYMBOL}[] = {${bytes} 0x00};\n")
