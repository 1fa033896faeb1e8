//! The text of the files that let C and C++ builds find the installed library: a pkg-config
//! `.pc` and a CMake package (config + version file) exporting `pix2pix::pix2pix`.

use std::path::Path;

/// What the files describe: the version and the file names `install` lays out.
pub struct Library<'a> {
    /// `0.1.0`
    pub version: &'a str,
    /// `0`: the SONAME's version (`libpix2pix.so.0`).
    pub major: &'a str,
    /// `libpix2pix.so.0.1.0`, the real file under `lib/`.
    pub file: &'a str,
    /// `libpix2pix.so.0`
    pub soname: &'a str,
    /// `sizeof(void *)` of the library's target (8 on x86_64).
    pub pointer_bytes: usize,
}

/// `lib/pkgconfig/pix2pix.pc`, with the absolute prefix (pkg-config's convention).
pub fn pkg_config(lib: &Library, prefix: &Path) -> String {
    format!(
        "prefix={prefix}
exec_prefix=${{prefix}}
libdir=${{exec_prefix}}/lib
includedir=${{prefix}}/include

Name: pix2pix
Description: pix2pix (Isola et al. 2017) image-to-image translation on the CPU
URL: https://arxiv.org/abs/1611.07004
Version: {version}
Libs: -L${{libdir}} -lpix2pix
Cflags: -I${{includedir}}
",
        prefix = prefix.display(),
        version = lib.version,
    )
}

/// `lib/cmake/pix2pix/pix2pix-config.cmake`: relocatable, the prefix is found from the file's
/// own folder, so a moved install still works.
pub fn cmake_config(lib: &Library) -> String {
    format!(
        r#"# pix2pix-config.cmake, written by `cargo xtask install`: the imported target pix2pix::pix2pix.
#
#   find_package(pix2pix {major_minor} REQUIRED)
#   target_link_libraries(app PRIVATE pix2pix::pix2pix)
#
# Relocatable: the prefix is three folders up from this file (<prefix>/lib/cmake/pix2pix/).
get_filename_component(_pix2pix_prefix "${{CMAKE_CURRENT_LIST_DIR}}/../../.." ABSOLUTE)
set(_pix2pix_library "${{_pix2pix_prefix}}/lib/{file}")
set(_pix2pix_include "${{_pix2pix_prefix}}/include")

if(NOT EXISTS "${{_pix2pix_library}}" OR NOT EXISTS "${{_pix2pix_include}}/pix2pix.h")
  set(pix2pix_FOUND FALSE)
  set(pix2pix_NOT_FOUND_MESSAGE
      "incomplete install under ${{_pix2pix_prefix}}: expected ${{_pix2pix_library}} and ${{_pix2pix_include}}/pix2pix.h")
  unset(_pix2pix_prefix)
  unset(_pix2pix_library)
  unset(_pix2pix_include)
  return()
endif()

if(NOT TARGET pix2pix::pix2pix)
  add_library(pix2pix::pix2pix SHARED IMPORTED)
  set_target_properties(pix2pix::pix2pix PROPERTIES
    IMPORTED_LOCATION "${{_pix2pix_library}}"
    IMPORTED_SONAME "{soname}"
    INTERFACE_INCLUDE_DIRECTORIES "${{_pix2pix_include}}")
endif()

set(pix2pix_INCLUDE_DIRS "${{_pix2pix_include}}")
set(pix2pix_LIBRARIES pix2pix::pix2pix)
unset(_pix2pix_prefix)
unset(_pix2pix_library)
unset(_pix2pix_include)
"#,
        major_minor = lib.version.rsplit_once('.').map_or(lib.version, |(mm, _)| mm),
        file = lib.file,
        soname = lib.soname,
    )
}

/// `lib/cmake/pix2pix/pix2pix-config-version.cmake`: a request is compatible when it has the
/// installed major version (the SONAME's) and is not newer; consumers of the library's pointer
/// width only.
pub fn cmake_config_version(lib: &Library) -> String {
    format!(
        r#"# pix2pix-config-version.cmake, written by `cargo xtask install`.
# Compatible with a request of the same major version (the SONAME's: {soname}) that is not
# newer than this install; no version requested accepts it too.
set(PACKAGE_VERSION "{version}")

if(NOT PACKAGE_FIND_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
elseif(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
elseif(NOT PACKAGE_FIND_VERSION_MAJOR STREQUAL "{major}")
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION VERSION_EQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()

# The library is {bits}-bit; a consumer of another pointer width cannot link it.
if(CMAKE_SIZEOF_VOID_P AND NOT CMAKE_SIZEOF_VOID_P STREQUAL "{bytes}")
  set(PACKAGE_VERSION "${{PACKAGE_VERSION}} ({bits}bit)")
  set(PACKAGE_VERSION_UNSUITABLE TRUE)
endif()
"#,
        version = lib.version,
        major = lib.major,
        soname = lib.soname,
        bytes = lib.pointer_bytes,
        bits = lib.pointer_bytes * 8,
    )
}
