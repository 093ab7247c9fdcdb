// {{name}}: a wasm-ivr IVR in JavaScript, built with componentize-qjs (QuickJS).
//
// Menu: 1 reaches sales (a transfer to internal extension 100, with the caller's number in the
// context), 2 hears the opening hours and comes back to the menu. A timeout or an unknown key
// asks again (`retry`); after MAX_MISSES misses in a row the IVR says goodbye and hangs up. If
// the transfer fails, it apologises and hangs up (`busy`).
//
// How WIT maps to JavaScript: interfaces are ES modules named by the interface; records use
// camelCase fields; variants are `{ tag, val }`; an import returning `result` returns the ok
// value or throws an Error whose `payload` is the error variant; throwing a string from
// `handleCall` returns `err(string)`.

import call from "wasm-ivr:ivr/call@0.1.0";

const MENU = "Thank you for calling. For sales, press 1. For our opening hours, press 2.";
const MAX_MISSES = 3;

const say = (text) => ({ tag: "say", val: { text, voice: null } });

class HungUp extends Error {}

// Runs a call import; turns `hung-up` into HungUp so the call unwinds, rethrows the rest.
function guarded(fn) {
  try {
    return fn();
  } catch (e) {
    if (e && e.payload && e.payload.tag === "hung-up") throw new HungUp();
    throw e;
  }
}

// Plays `text` and returns the key pressed, or null on a timeout.
function ask(text) {
  const result = guarded(() =>
    call.gather({
      prompts: [say(text)],
      maxDigits: 1,
      terminators: "",
      firstDigitTimeoutMs: 5000,
      interDigitTimeoutMs: 3000,
      bargeIn: true,
      typeAhead: true,
    }),
  );
  return result.tag === "timeout" ? null : result.val;
}

function play(text) {
  guarded(() => call.play([say(text)]));
}

function menu(info) {
  let misses = 0;
  for (;;) {
    call.step("menu");
    const choice = ask(MENU);
    if (choice === "1") {
      call.step("sales");
      try {
        guarded(() =>
          call.transfer({ tag: "internal", val: "100" }, [
            ["menu", "sales"],
            ["caller", info.caller],
          ]),
        );
      } catch (e) {
        if (e instanceof HungUp || !e.payload || e.payload.tag !== "transfer-failed") throw e;
        call.step("busy");
        call.hangup([say("Everyone is busy. Please call again later.")]);
      }
      return;
    }
    if (choice === "2") {
      misses = 0;
      call.step("hours");
      play("We are open Monday to Friday, nine to five.");
      continue;
    }
    misses += 1;
    if (misses >= MAX_MISSES) {
      call.step("goodbye");
      call.hangup([say("Sorry we could not help. Goodbye.")]);
      return;
    }
    call.step("retry");
    if (choice !== null) play("Sorry, that is not an option.");
  }
}

export function handleCall(info) {
  try {
    menu(info);
  } catch (e) {
    if (e instanceof HungUp) return;
    throw `{{name}} failed: ${e}`;
  }
}
