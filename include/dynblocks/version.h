/** @file dynblocks/version.h
 * Version macros, the export macro and the runtime version query. */
#ifndef DYNBLOCKS_VERSION_H
#define DYNBLOCKS_VERSION_H

/** Major version: changes break the API or ABI (until 1.0, minor ones may too). */
#define DYNB_VERSION_MAJOR 0
/** Minor version: additions. */
#define DYNB_VERSION_MINOR 1
/** Patch version: fixes. */
#define DYNB_VERSION_PATCH 0
/** One number that compares in release order: major*10000 + minor*100 + patch. */
#define DYNB_VERSION_NUMBER \
  (DYNB_VERSION_MAJOR * 10000 + DYNB_VERSION_MINOR * 100 + DYNB_VERSION_PATCH)
#define DYNB__STR2(x) #x
#define DYNB__STR(x) DYNB__STR2(x)
/** The version as a string literal, e.g. "0.1.0". */
#define DYNB_VERSION_STRING \
  DYNB__STR(DYNB_VERSION_MAJOR) "." DYNB__STR(DYNB_VERSION_MINOR) "." DYNB__STR(DYNB_VERSION_PATCH)

/** Marks a public function: exported from the shared library, whose other
 * symbols are hidden. */
#if defined(_WIN32) && defined(DYNB_BUILDING_DLL)
#define DYNB_API __declspec(dllexport)
#elif defined(__GNUC__)
#define DYNB_API __attribute__((visibility("default")))
#else
#define DYNB_API
#endif

/** Marks a public function that a later version will remove. */
#if defined(__GNUC__)
#define DYNB_DEPRECATED(msg) __attribute__((deprecated(msg)))
#else
#define DYNB_DEPRECATED(msg)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** The library's version as DYNB_VERSION_NUMBER; compare it with the macro
 * to detect a header/library mismatch.
 * @return the number the library was built with. Since: 0.1 */
DYNB_API unsigned dynb_version_number(void);
/** The library's version as a string, e.g. "0.1.0" (static storage).
 * @return never NULL. Since: 0.1 */
DYNB_API const char *dynb_version_string(void);

#ifdef __cplusplus
}
#endif
#endif
