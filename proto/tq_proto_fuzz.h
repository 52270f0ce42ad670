/* tq_proto_fuzz.h - the fuzz target of the protocol decoders and the
 * layout of its input, shared by the libFuzzer build and the
 * deterministic driver (tq_proto_fuzz_main.c). See docs/fuzzing.md.
 *
 * One fuzz input describes one received multipart message:
 *
 *   u16 LE  nframes   number of data frames = nframes % TQ_FUZZ_FRAME_MOD
 *   u8      config    bits 0-2: max_payload (tq_fuzz_max_payload),
 *                     bits 3-4: max_len for JSON bodies (tq_fuzz_max_json)
 *   nframes x { u16 LE len, len bytes }   data frames 1..n
 *   the rest           frame 0 (head and body)
 *
 * Missing header bytes read as 0; a data frame cut short by the end of
 * the input takes what is left, and frames after the end are empty, so
 * every byte string is a valid input. */
#ifndef TQ_PROTO_FUZZ_H
#define TQ_PROTO_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "tq_limits.h"

/* 0..TQ_MAX_BATCH+2 data frames: every legal count, and two over. */
#define TQ_FUZZ_FRAME_MOD (TQ_MAX_BATCH + 3)

/* The caps the decoders are given, chosen by the config byte. */
size_t tq_fuzz_max_payload(uint8_t config);
size_t tq_fuzz_max_json(uint8_t config);

/* Inputs decoded so far, by head type (index 256: head rejected) and
 * verdict; the driver prints them to show which paths were reached. */
extern unsigned long tq_fuzz_accepted[257], tq_fuzz_rejected[257];

/* Decode the message the input describes; abort() with a message on
 * stderr if a decoder breaks one of its promises. Always returns 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
