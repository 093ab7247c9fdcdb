// {{name}}: a wasm-ivr IVR in C.
//
// Menu: 1 reaches sales (a transfer to internal extension 100, with the caller's number in the
// context), 2 hears the opening hours and comes back to the menu. A timeout or an unknown key
// asks again (`retry`); after MAX_MISSES misses in a row the IVR says goodbye and hangs up. If
// the transfer fails, it apologises and hangs up (`busy`).
//
// The bindings (build/gen/ivr.h, ivr.c, ivr_component_type.o) are generated from wit/ivr.wit
// by `wit-bindgen c` (see build.sh). Memory: arguments passed to imports are borrowed (string
// literals are fine); results the host returns are freed with the generated `*_free` functions,
// and the call-info given to exports_ivr_handle_call with ivr_call_info_free.

#include <stdbool.h>
#include <string.h>

#include "ivr.h"

#define MAX_MISSES 3

typedef wasm_ivr_ivr_types_prompt_t prompt_t;
typedef wasm_ivr_ivr_call_call_error_t call_error_t;

static const char *MENU =
    "Thank you for calling. For sales, press 1. For our opening hours, press 2.";

// A say-prompt over a C string.
static prompt_t say(const char *text) {
  prompt_t p;
  memset(&p, 0, sizeof p);
  p.tag = WASM_IVR_IVR_TYPES_PROMPT_SAY;
  ivr_string_set(&p.val.say.text, text);
  p.val.say.voice.is_some = false;
  return p;
}

// Labels the step the caller is in (traces, call records, metrics).
static void step(const char *name) {
  ivr_string_t s;
  ivr_string_set(&s, name);
  wasm_ivr_ivr_call_step(&s);
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

// Plays the menu and waits for one key. On CHOICE_KEY, *key holds it.
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

// Transfers to sales with context. A failed transfer apologises and hangs up.
static void sales(const ivr_string_t *caller) {
  wasm_ivr_ivr_call_destination_t to;
  memset(&to, 0, sizeof to);
  to.tag = WASM_IVR_IVR_TYPES_DESTINATION_INTERNAL;
  ivr_string_set(&to.val.internal, "100");
  ivr_tuple2_string_string_t pairs[2];
  ivr_string_set(&pairs[0].f0, "menu");
  ivr_string_set(&pairs[0].f1, "sales");
  ivr_string_set(&pairs[1].f0, "caller");
  pairs[1].f1 = *caller;
  ivr_list_tuple2_string_string_t context = {pairs, 2};
  call_error_t err;
  if (wasm_ivr_ivr_call_transfer(&to, &context, &err)) return;
  bool failed = err.tag == WASM_IVR_IVR_TYPES_CALL_ERROR_TRANSFER_FAILED;
  wasm_ivr_ivr_call_call_error_free(&err);
  if (!failed) return;  // the caller hung up
  step("busy");
  hangup("Everyone is busy. Please call again later.");
}

bool exports_ivr_handle_call(ivr_call_info_t *info, ivr_string_t *err) {
  (void)err;
  int misses = 0;
  for (;;) {
    step("menu");
    char key = 0;
    enum choice c = ask(MENU, &key);
    if (c == CHOICE_GONE) break;
    if (c == CHOICE_KEY && key == '1') {
      step("sales");
      sales(&info->caller);
      break;
    }
    if (c == CHOICE_KEY && key == '2') {
      misses = 0;
      step("hours");
      if (!play("We are open Monday to Friday, nine to five.")) break;
      continue;
    }
    misses++;
    if (misses >= MAX_MISSES) {
      step("goodbye");
      hangup("Sorry we could not help. Goodbye.");
      break;
    }
    step("retry");
    if (c == CHOICE_KEY && !play("Sorry, that is not an option.")) break;
  }
  ivr_call_info_free(info);
  return true;
}
