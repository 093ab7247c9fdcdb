// A wasm-ivr IVR in JavaScript: Tony's Pizza.
//
// Menu: 1 tracks an order (order number, then #), 2 places an order (transfer to the shop's
// phone, with the caller's number), 3 hears the opening hours, 9 stops marketing calls.
// A timeout or an unknown key replays the menu; after `max_retries` misses in a row it hangs up.
//
// Settings (js-menu.toml beside the .wasm, read as JSON through the `config` import):
// `shop_number` (external number for orders), `max_retries` (default 2).
//
// Bindings: componentize-qjs maps WIT to JS. Imports are ES modules named by the interface;
// records use camelCase fields; variants are `{ tag, val }`; a `result` import returns the ok
// value or throws an Error whose `payload` is the error variant; throwing a string from
// `handleCall` returns `err(string)`.

import call from "wasm-ivr:ivr/call@0.1.0";
import config from "wasm-ivr:ivr/config@0.1.0";

const say = (text) => ({ tag: "say", val: { text, voice: null } });

const MENU =
  "Welcome to Tony's Pizza. To track an order, press 1. To place an order, press 2. " +
  "For our opening hours, press 3. To stop our calls, press 9.";

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

// Plays `text` and returns the keys entered, or null on a timeout.
function gather(text, maxDigits = 1, terminators = "") {
  const result = guarded(() =>
    call.gather({
      prompts: [say(text)],
      maxDigits,
      terminators,
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

// A made-up but stable status per order number, so the menu has something to say.
function orderStatus(order) {
  const statuses = ["in the oven", "out for delivery", "being prepared", "delivered"];
  let sum = 0;
  for (const d of order) sum += Number(d);
  return statuses[sum % statuses.length];
}

function menu(info, settings) {
  const maxRetries = settings.max_retries ?? 2;
  const shop = String(settings.shop_number ?? "15550123");
  let misses = 0;
  for (;;) {
    call.step("menu");
    const choice = gather(MENU);
    switch (choice) {
      case "1": {
        misses = 0;
        call.step("order-number");
        const order = gather("Enter your order number, then press hash.", 6, "#");
        if (order && order.length >= 3) {
          call.step("order-status");
          call.hangup([say(`Order ${order.split("").join(" ")} is ${orderStatus(order)}. Enjoy!`)]);
          return;
        }
        call.step("order-unknown");
        play("Sorry, we could not find that order.");
        break;
      }
      case "2": {
        call.step("new-order");
        try {
          guarded(() =>
            call.transfer({ tag: "external", val: shop }, [
              ["caller", info.caller],
              ["intent", "new-order"],
            ]),
          );
          return;
        } catch (e) {
          if (e instanceof HungUp) throw e;
          call.log("warn", `transfer failed: ${JSON.stringify(e.payload)}`);
          call.step("shop-busy");
          call.hangup([say("The shop is busy right now. Please call again in a few minutes.")]);
          return;
        }
      }
      case "3":
        misses = 0;
        call.step("hours");
        play("We are open every day from eleven in the morning until eleven at night.");
        break;
      case "9":
        call.step("opt-out");
        call.suppress([say("You will not hear from us again. Goodbye.")]);
        return;
      default:
        misses += 1;
        if (misses > maxRetries) {
          call.step("goodbye");
          call.hangup([say("Sorry we could not help. Goodbye.")]);
          return;
        }
        if (choice !== null) play("Sorry, that is not an option.");
    }
  }
}

export function handleCall(info) {
  let settings;
  try {
    settings = JSON.parse(config.get() || "{}");
  } catch (e) {
    throw `invalid js-menu settings: ${e}`;
  }
  try {
    menu(info, settings);
  } catch (e) {
    if (e instanceof HungUp) return;
    throw `js-menu failed: ${e}`;
  }
}
