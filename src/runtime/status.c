/* Names and messages of status codes, generated from DYNB_STATUS_MAP. */
#include "dynblocks/status.h"

const char *dynb_status_name(dynb_status status) {
  switch (status) {
#define DYNB__STATUS_NAME(name, value, msg) \
  case DYNB_STATUS_##name:                  \
    return "DYNB_STATUS_" #name;
    DYNB_STATUS_MAP(DYNB__STATUS_NAME)
#undef DYNB__STATUS_NAME
  }
  return "DYNB_STATUS_UNKNOWN";
}

const char *dynb_status_message(dynb_status status) {
  switch (status) {
#define DYNB__STATUS_MSG(name, value, msg) \
  case DYNB_STATUS_##name:                 \
    return msg;
    DYNB_STATUS_MAP(DYNB__STATUS_MSG)
#undef DYNB__STATUS_MSG
  }
  return "unknown status";
}
