#pragma once
#include <curl/curl.h>

// libcurl's curl_easy_setopt, curl_easy_getinfo and curl_multi_setopt are variadic C functions,
// which Swift cannot call. Each wrapper below fixes one argument kind so Swift sees a typed
// signature. Only KurirHTTP uses them.

/// curl_easy_setopt is variadic: typed wrapper for options taking a long.
static inline CURLcode CCurl_easy_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}

/// curl_easy_setopt is variadic: typed wrapper for options taking a curl_off_t.
static inline CURLcode CCurl_easy_setopt_off_t(CURL *handle, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(handle, option, value);
}

/// curl_easy_setopt is variadic: typed wrapper for options taking a C string (or a byte
/// pointer, as CURLOPT_COPYPOSTFIELDS does).
static inline CURLcode CCurl_easy_setopt_string(CURL *handle, CURLoption option, const char *value) {
    return curl_easy_setopt(handle, option, value);
}

/// curl_easy_setopt is variadic: typed wrapper for options taking an opaque pointer
/// (CURLOPT_WRITEDATA, CURLOPT_PRIVATE, CURLOPT_ERRORBUFFER).
static inline CURLcode CCurl_easy_setopt_pointer(CURL *handle, CURLoption option, void *value) {
    return curl_easy_setopt(handle, option, value);
}

/// curl_easy_setopt is variadic: typed wrapper for options taking a header list.
static inline CURLcode CCurl_easy_setopt_slist(CURL *handle, CURLoption option, struct curl_slist *value) {
    return curl_easy_setopt(handle, option, value);
}

/// curl_easy_setopt is variadic: typed wrapper for CURLOPT_WRITEFUNCTION's function pointer.
static inline CURLcode CCurl_easy_setopt_write_callback(CURL *handle, CURLoption option, curl_write_callback value) {
    return curl_easy_setopt(handle, option, value);
}

/// curl_easy_setopt is variadic: typed wrapper for CURLOPT_PREREQFUNCTION's function pointer.
static inline CURLcode CCurl_easy_setopt_prereq_callback(CURL *handle, curl_prereq_callback value) {
    return curl_easy_setopt(handle, CURLOPT_PREREQFUNCTION, value);
}

/// curl_easy_getinfo is variadic: typed wrapper for CURLINFO_LONG items.
static inline CURLcode CCurl_easy_getinfo_long(CURL *handle, CURLINFO info, long *value) {
    return curl_easy_getinfo(handle, info, value);
}

/// curl_easy_getinfo is variadic: typed wrapper for CURLINFO_OFF_T items.
static inline CURLcode CCurl_easy_getinfo_off_t(CURL *handle, CURLINFO info, curl_off_t *value) {
    return curl_easy_getinfo(handle, info, value);
}

/// curl_multi_setopt is variadic: typed wrapper for multi options taking a long.
static inline CURLMcode CCurl_multi_setopt_long(CURLM *handle, CURLMoption option, long value) {
    return curl_multi_setopt(handle, option, value);
}

/// CURL_GLOBAL_DEFAULT is a macro built from other macros; a constant function makes the
/// intended flag set explicit to Swift.
static inline long CCurl_global_default_flags(void) {
    return CURL_GLOBAL_DEFAULT;
}

/// curl_multi_setopt is variadic: typed wrapper for options taking an opaque pointer
/// (CURLMOPT_SOCKETDATA, CURLMOPT_TIMERDATA).
static inline CURLMcode CCurl_multi_setopt_pointer(CURLM *handle, CURLMoption option, void *value) {
    return curl_multi_setopt(handle, option, value);
}

/// curl_multi_setopt is variadic: typed wrapper for CURLMOPT_SOCKETFUNCTION (NULL removes it).
static inline CURLMcode CCurl_multi_setopt_socket_callback(CURLM *handle, curl_socket_callback value) {
    return curl_multi_setopt(handle, CURLMOPT_SOCKETFUNCTION, value);
}

/// curl_multi_setopt is variadic: typed wrapper for CURLMOPT_TIMERFUNCTION (NULL removes it).
static inline CURLMcode CCurl_multi_setopt_timer_callback(CURLM *handle, curl_multi_timer_callback value) {
    return curl_multi_setopt(handle, CURLMOPT_TIMERFUNCTION, value);
}
