/* dynblocks version macros. */
#ifndef DYNBLOCKS_VERSION_H
#define DYNBLOCKS_VERSION_H

#define DYNB_VERSION_MAJOR 0
#define DYNB_VERSION_MINOR 1
#define DYNB_VERSION_PATCH 0
/* One number that compares in release order: major*10000 + minor*100 + patch. */
#define DYNB_VERSION_NUMBER \
  (DYNB_VERSION_MAJOR * 10000 + DYNB_VERSION_MINOR * 100 + DYNB_VERSION_PATCH)
#define DYNB__STR2(x) #x
#define DYNB__STR(x) DYNB__STR2(x)
#define DYNB_VERSION_STRING \
  DYNB__STR(DYNB_VERSION_MAJOR) "." DYNB__STR(DYNB_VERSION_MINOR) "." DYNB__STR(DYNB_VERSION_PATCH)

#if defined(_WIN32) && defined(DYNB_BUILDING_DLL)
#define DYNB_API __declspec(dllexport)
#elif defined(__GNUC__)
#define DYNB_API __attribute__((visibility("default")))
#else
#define DYNB_API
#endif

#if defined(__GNUC__)
#define DYNB_DEPRECATED(msg) __attribute__((deprecated(msg)))
#else
#define DYNB_DEPRECATED(msg)
#endif

#endif
