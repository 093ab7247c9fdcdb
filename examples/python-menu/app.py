"""A wasm-ivr IVR in Python: the City Library's phone line.

Menu: 1 renews loans (card number, then `#`), 2 hears this week's events, 3 reaches a
librarian (the card number, when given, travels with the transfer), 9 stops marketing calls,
`*` returns to whoever entered this IVR (as a sub-menu) or ends the call (at the top level).
Timeouts and unknown keys replay the menu; after `max_retries` of them in a row it hangs up.

Settings (`python-menu.toml` beside the .wasm, read through the `config` import as JSON):
`librarian` (an internal extension, default "300"), `max_retries` (default 2).

Build: `componentize-py -d ../../wit -w ivr componentize app -o python-menu.wasm`.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import call, config
from wit_world.imports.types import (
    CallError_HungUp,
    Destination_Internal,
    GatherOptions,
    GatherResult_Digits,
    GatherResult_Partial,
    LogLevel,
    Prompt_Say,
    Speech,
)

MENU = (
    "Welcome to the City Library. To renew your loans, press 1. For this week's events, "
    "press 2. To speak to a librarian, press 3. To stop our calls, press 9. "
    "To go back, press star."
)


class HungUp(Exception):
    """The caller has gone: unwind and return from handle_call."""


def say(text):
    return Prompt_Say(Speech(text=text, voice=None))


def gather(text, max_digits=1, terminators=""):
    """Plays `text` and returns the keys entered, or None on a timeout."""
    options = GatherOptions(
        prompts=[say(text)],
        max_digits=max_digits,
        terminators=terminators,
        first_digit_timeout_ms=5000,
        inter_digit_timeout_ms=3000,
        barge_in=True,
        type_ahead=True,
    )
    try:
        result = call.gather(options)
    except Err as e:
        raise HungUp() if isinstance(e.value, CallError_HungUp) else e
    if isinstance(result, (GatherResult_Digits, GatherResult_Partial)):
        return result.value
    return None


def play(text):
    try:
        call.play([say(text)])
    except Err as e:
        raise HungUp() if isinstance(e.value, CallError_HungUp) else e


class WitWorld(wit_world.WitWorld):
    def handle_call(self, info):
        settings = json.loads(config.get() or "{}")
        librarian = str(settings.get("librarian", "300"))
        max_retries = int(settings.get("max_retries", 2))
        try:
            self.menu(librarian, max_retries)
        except HungUp:
            pass

    def menu(self, librarian, max_retries):
        misses = 0
        card = ""
        while True:
            call.step("menu")
            choice = gather(MENU)
            if choice == "1":
                misses = 0
                call.step("card")
                entry = gather("Enter your library card number, then press hash.", 10, "#")
                if entry and len(entry) >= 4:
                    card = entry
                    call.step("renewed")
                    play("Done. Every loan on card ending " + " ".join(card[-4:]) + " is renewed for three weeks.")
                else:
                    call.step("bad-card")
                    play("Sorry, that is not a card number.")
            elif choice == "2":
                misses = 0
                call.step("events")
                play("This week: story time on Tuesday at ten, and the book club on Thursday at seven.")
            elif choice == "3":
                call.step("librarian")
                context = [("from", "python-menu")]
                if card:
                    context.append(("card", card))
                try:
                    call.transfer(Destination_Internal(librarian), context)
                    return
                except Err as e:
                    if isinstance(e.value, CallError_HungUp):
                        raise HungUp()
                    call.log(LogLevel.WARN, "transfer failed: " + repr(e.value))
                    call.step("busy")
                    play("All our librarians are busy. Please try again later.")
            elif choice == "9":
                call.step("opt-out")
                call.suppress([say("You will not receive our calls again. Goodbye.")])
                return
            elif choice == "*":
                # Returning without hanging up hands the caller back to the IVR that entered
                # this one; at the top level the runtime hangs up.
                call.step("back")
                return
            else:
                misses += 1
                if misses > max_retries:
                    call.step("goodbye")
                    call.hangup([say("Sorry we could not help. Goodbye.")])
                    return
                if choice is not None:
                    play("Sorry, that is not an option.")
