// A wasm-ivr IVR in C: the Sunrise Dental clinic.
//
// Menu: 1 appointments (internal extension 101), 2 prescription refills (a SIP URI),
// 3 the clinic's address (then back to the menu), 0 reception (the runtime's default target).
// An unknown key says so and asks again; a timeout asks again; after MAX_MISSES misses in a
// row the IVR says goodbye and hangs up. A failed transfer says everyone is busy and hangs up.
//
// The bindings (ivr.h / ivr.c / ivr_component_type.o) are generated from ../../wit by
// `wit-bindgen c`; see README.md and scripts/build-examples.sh.

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ivr.h"

#define MAX_MISSES 3

typedef wasm_ivr_ivr_types_prompt_t prompt_t;
typedef wasm_ivr_ivr_call_call_error_t call_error_t;

// A say-prompt over a C string (borrowed: imports never take ownership of their arguments).
static prompt_t say(const char *text) {
  prompt_t p;
  memset(&p, 0, sizeof p);
  p.tag = WASM_IVR_IVR_TYPES_PROMPT_SAY;
  ivr_string_set(&p.val.say.text, text);
  p.val.say.voice.is_some = false;
  return p;
}

static void step(const char *name) {
  ivr_string_t s;
  ivr_string_set(&s, name);
  wasm_ivr_ivr_call_step(&s);
}

static void log_warn(const char *message) {
  ivr_string_t s;
  ivr_string_set(&s, message);
  wasm_ivr_ivr_call_log(WASM_IVR_IVR_TYPES_LOG_LEVEL_WARN, &s);
}

static void hangup(const char *goodbye) {
  prompt_t p = say(goodbye);
  wasm_ivr_ivr_call_list_prompt_t list = {&p, 1};
  wasm_ivr_ivr_call_hangup(&list);
}

// Plays a sentence. Returns false when the caller has gone.
static bool play(const char *text) {
  prompt_t p = say(text);
  wasm_ivr_ivr_call_list_prompt_t list = {&p, 1};
  call_error_t err;
  if (wasm_ivr_ivr_call_play(&list, &err)) return true;
  bool hung_up = err.tag == WASM_IVR_IVR_TYPES_CALL_ERROR_HUNG_UP;
  wasm_ivr_ivr_call_call_error_free(&err);
  return !hung_up;
}

enum choice { CHOICE_KEY, CHOICE_TIMEOUT, CHOICE_GONE };

// Asks for one key. On CHOICE_KEY, *key holds it.
static enum choice ask(const char *text, char *key) {
  prompt_t p = say(text);
  wasm_ivr_ivr_call_gather_options_t options;
  memset(&options, 0, sizeof options);
  options.prompts.ptr = &p;
  options.prompts.len = 1;
  options.max_digits = 1;
  ivr_string_set(&options.terminators, "");
  options.first_digit_timeout_ms = 5000;
  options.inter_digit_timeout_ms = 3000;
  options.barge_in = true;
  options.type_ahead = true;

  wasm_ivr_ivr_call_gather_result_t result;
  call_error_t err;
  if (!wasm_ivr_ivr_call_gather(&options, &result, &err)) {
    wasm_ivr_ivr_call_call_error_free(&err);
    return CHOICE_GONE;  // hung-up (a one-key gather cannot be a bad request)
  }
  enum choice c = CHOICE_TIMEOUT;
  if (result.tag == WASM_IVR_IVR_TYPES_GATHER_RESULT_DIGITS && result.val.digits.len > 0) {
    *key = (char)result.val.digits.ptr[0];
    c = CHOICE_KEY;
  }
  wasm_ivr_ivr_call_gather_result_free(&result);
  return c;
}

// Transfers with the caller's number and the department as context. Returns true when the
// call has left the IVR (transferred, or the caller hung up); false when the transfer failed.
static bool transfer(wasm_ivr_ivr_call_destination_t *to, const char *department,
                     const ivr_string_t *caller) {
  ivr_tuple2_string_string_t pairs[2];
  ivr_string_set(&pairs[0].f0, "department");
  ivr_string_set(&pairs[0].f1, department);
  ivr_string_set(&pairs[1].f0, "caller");
  pairs[1].f1 = *caller;
  ivr_list_tuple2_string_string_t context = {pairs, 2};
  call_error_t err;
  if (wasm_ivr_ivr_call_transfer(to, &context, &err)) return true;
  bool failed = err.tag == WASM_IVR_IVR_TYPES_CALL_ERROR_TRANSFER_FAILED;
  wasm_ivr_ivr_call_call_error_free(&err);
  if (!failed) return true;
  log_warn("transfer failed");
  step("busy");
  hangup("Everyone is busy helping other patients. Please call again soon.");
  return true;
}

static const char *MENU =
    "Welcome to Sunrise Dental. For appointments, press 1. For prescription refills, press 2. "
    "For our address, press 3. For reception, press 0.";

bool exports_ivr_handle_call(ivr_call_info_t *info, ivr_string_t *err) {
  (void)err;
  int misses = 0;
  for (;;) {
    step("menu");
    char key = 0;
    enum choice c = ask(MENU, &key);
    if (c == CHOICE_GONE) break;
    wasm_ivr_ivr_call_destination_t to;
    memset(&to, 0, sizeof to);
    if (c == CHOICE_KEY && key == '1') {
      step("appointments");
      to.tag = WASM_IVR_IVR_TYPES_DESTINATION_INTERNAL;
      ivr_string_set(&to.val.internal, "101");
      if (transfer(&to, "appointments", &info->caller)) break;
    } else if (c == CHOICE_KEY && key == '2') {
      step("prescriptions");
      to.tag = WASM_IVR_IVR_TYPES_DESTINATION_SIP_URI;
      ivr_string_set(&to.val.sip_uri, "refills@pharmacy.example.net");
      if (transfer(&to, "prescriptions", &info->caller)) break;
    } else if (c == CHOICE_KEY && key == '3') {
      misses = 0;
      step("address");
      if (!play("We are at 12 Harbour Street, next to the post office.")) break;
    } else if (c == CHOICE_KEY && key == '0') {
      step("reception");
      to.tag = WASM_IVR_IVR_TYPES_DESTINATION_DEFAULT;
      if (transfer(&to, "reception", &info->caller)) break;
    } else {
      misses++;
      if (misses >= MAX_MISSES) {
        step("goodbye");
        hangup("Sorry we could not help. Goodbye.");
        break;
      }
      if (c == CHOICE_KEY) {
        step("invalid");
        if (!play("Sorry, that is not an option.")) break;
      }
    }
  }
  ivr_call_info_free(info);
  return true;
}
