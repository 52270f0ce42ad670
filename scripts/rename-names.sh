#!/bin/sh
# scripts/rename-names.sh - the names that meant two things, renamed once
# (issue 13, point 6). Run from anywhere, on a clean tree, after the
# branches of that round are merged; it is idempotent (a second run
# changes nothing) and touches only C sources and headers, meson files
# and docs. Then build and run the unit tests.
#
#   tq_error_t, tq_error_set  -> tq_err_t, tq_err_set   (tq_error() stays the
#       log macro; the error struct joins tq_err_code_t / tq_err_code_name)
#   tq_engine_err_t           -> tq_err_t  (it was a copy of the same struct;
#       master/engine.h keeps an alias until this runs)
#   proto/tq_error.[ch]       -> proto/tq_err.[ch]
#   tq_error_to_public        -> tq_err_to_public
#   PROTO_ASSERT              -> TQ_ASSERT  (one invariant check, tq_error.h)
#   tq_error_line             -> tq_output_error_line  (client/output.c's
#       printer of an error line; not the log macro either)
#   tq_client_fail            -> tq_api_fail  (it fills the public
#       taskq_error_t for the client *and* the worker API)
#   in workerlib/ only (the master has its own tq_task_t and TQ_CANCEL_*):
#   tq_task_t                 -> tq_pool_task_t
#   tq_task_free              -> tq_pool_task_free
#   TQ_CANCEL_NONE/KILLED/RELEASED -> TQ_POOL_CANCEL_NONE/KILLED/RELEASED
set -eu
cd "$(dirname "$0")/.."

files() { git ls-files -- '*.c' '*.h' '*.def' '*.md' 'meson.build' '*/meson.build' "$@"; }

if [ -f proto/tq_error.h ] && [ ! -f proto/tq_err.h ]; then
    git mv proto/tq_error.h proto/tq_err.h
    git mv proto/tq_error.c proto/tq_err.c
fi

sed -i '/^\/\* Why a command was refused: tq_error_t/,/^typedef tq_error_t tq_engine_err_t;$/d' \
    master/engine.h
sed -i '/^\/\* The one invariant check (tq_error.h); an alias until$/,/^#define PROTO_ASSERT(cond) TQ_ASSERT(cond)$/d' \
    proto/tq_proto_int.h

files | xargs sed -i -E \
    -e 's/\btq_engine_err_t\b/tq_err_t/g' \
    -e 's/\btq_error_t\b/tq_err_t/g' \
    -e 's/\btq_error_set\b/tq_err_set/g' \
    -e 's/\btq_error_to_public\b/tq_err_to_public/g' \
    -e 's/\btq_client_fail\b/tq_api_fail/g' \
    -e 's/\bPROTO_ASSERT\b/TQ_ASSERT/g' \
    -e 's/\btq_error_line\b/tq_output_error_line/g' \
    -e 's/"tq_error\.h"/"tq_err.h"/g' \
    -e "s/'tq_error\.c'/'tq_err.c'/g" \
    -e 's/\btq_error\.([ch])\b/tq_err.\1/g' \
    -e 's/\btq_error\.\[ch\]/tq_err.[ch]/g'

git ls-files -- 'workerlib/*.c' 'workerlib/*.h' | xargs sed -i -E \
    -e 's/\btq_task_t\b/tq_pool_task_t/g' \
    -e 's/\btq_task_free\b/tq_pool_task_free/g' \
    -e 's/\bTQ_CANCEL_(NONE|KILLED|RELEASED)\b/TQ_POOL_CANCEL_\1/g'
echo "rename-names: done (now: ninja -C build && meson test -C build --suite unit)"
