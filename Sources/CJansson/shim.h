#pragma once
#include <jansson.h>

// jansson's type tests are macros (json_typeof, json_is_*), which Swift cannot import:
// KurirJSON switches on CJansson_typeof instead of calling json_is_*. Only KurirJSON uses these.

/// json_typeof is a macro reading json->type: Swift cannot import it.
static inline json_type CJansson_typeof(const json_t *json) {
    return json_typeof(json);
}

/// json_decref is a static inline over a GCC atomic builtin; a plain function keeps Swift's
/// importer away from the atomics and gives one obvious call for "drop my reference".
static inline void CJansson_decref(json_t *json) {
    json_decref(json);
}
