# cmake -DOUTPUT=file.cc -DFUNCTION=Name -DHEADER=dir/header.h -DBASE=dir -DFILES=a,b -P embed_files.cmake
# Writes a C++ source defining `std::span<const EmbeddedFile> FUNCTION()`
# (EmbeddedFile from HEADER): every file of FILES (relative to BASE) as
# {name, bytes}, in the order given. Run at build time by
# attn_embed_files (attn_helpers.cmake), so an edited file is embedded anew.
string(REPLACE "," ";" FILES "${FILES}")
set(body "")
set(table "")
set(index 0)
foreach(name IN LISTS FILES)
  file(READ "${BASE}/${name}" hex HEX)
  string(LENGTH "${hex}" hex_length)
  math(EXPR size "${hex_length} / 2")
  # 0x.. for each byte, 16 to a line.
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(REGEX REPLACE "((0x..,){16})" "\\1\n    " bytes "${bytes}")
  string(APPEND body "alignas(16) constexpr unsigned char kFile${index}[${size} + 1] = {\n    ${bytes}0};\n")
  string(APPEND table "    {\"${name}\", {reinterpret_cast<const char*>(kFile${index}), ${size}}},\n")
  math(EXPR index "${index} + 1")
endforeach()
set(content "// Generated at build time by cmake/embed_files.cmake from ${BASE}: do not edit.
#include \"${HEADER}\"

namespace attnsearch {
namespace {

${body}
const EmbeddedFile kFiles[] = {
${table}};

}  // namespace

std::span<const EmbeddedFile> ${FUNCTION}() { return kFiles; }

}  // namespace attnsearch
")
# Rewritten only when it changed, so an unchanged input rebuilds nothing.
if(EXISTS "${OUTPUT}")
  file(READ "${OUTPUT}" old)
  if(old STREQUAL content)
    return()
  endif()
endif()
file(WRITE "${OUTPUT}" "${content}")
