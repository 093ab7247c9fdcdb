"""{{name}}: a wasm-ivr IVR in Python, built with componentize-py.

Menu: 1 reaches sales (a transfer to internal extension 100, with the caller's number in the
context), 2 hears the opening hours and comes back to the menu. A timeout or an unknown key asks
again (`retry`); after MAX_MISSES misses in a row the IVR says goodbye and hangs up. If the
transfer fails, it apologises and hangs up (`busy`).

How WIT maps to Python (`componentize-py -d wit -w ivr bindings out/` writes the bindings to
read): records are dataclasses, variants are classes such as `Prompt_Say(Speech(...))`, and an
import returning `result` raises `componentize_py_types.Err` with the error in `.value`.
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports import call
from wit_world.imports.types import (
    CallError_HungUp,
    CallError_TransferFailed,
    Destination_Internal,
    GatherOptions,
    GatherResult_Timeout,
    Prompt_Say,
    Speech,
)

MENU = "Thank you for calling. For sales, press 1. For our opening hours, press 2."
MAX_MISSES = 3


class HungUp(Exception):
    """The caller has gone: unwind and return from handle_call."""


def say(text):
    return Prompt_Say(Speech(text=text, voice=None))


def ask(text):
    """Plays `text` and returns the key pressed, or None on a timeout."""
    options = GatherOptions(
        prompts=[say(text)],
        max_digits=1,
        terminators="",
        first_digit_timeout_ms=5000,
        inter_digit_timeout_ms=3000,
        barge_in=True,
        type_ahead=True,
    )
    try:
        result = call.gather(options)
    except Err as e:
        raise HungUp() if isinstance(e.value, CallError_HungUp) else e
    if isinstance(result, GatherResult_Timeout):
        return None
    return result.value


def play(text):
    try:
        call.play([say(text)])
    except Err as e:
        raise HungUp() if isinstance(e.value, CallError_HungUp) else e


def menu(info):
    misses = 0
    while True:
        call.step("menu")
        choice = ask(MENU)
        if choice == "1":
            call.step("sales")
            try:
                call.transfer(Destination_Internal("100"), [("menu", "sales"), ("caller", info.caller)])
            except Err as e:
                if not isinstance(e.value, CallError_TransferFailed):
                    raise HungUp() if isinstance(e.value, CallError_HungUp) else e
                call.step("busy")
                call.hangup([say("Everyone is busy. Please call again later.")])
            return
        if choice == "2":
            misses = 0
            call.step("hours")
            play("We are open Monday to Friday, nine to five.")
            continue
        misses += 1
        if misses >= MAX_MISSES:
            call.step("goodbye")
            call.hangup([say("Sorry we could not help. Goodbye.")])
            return
        call.step("retry")
        if choice is not None:
            play("Sorry, that is not an option.")


class WitWorld(wit_world.WitWorld):
    def handle_call(self, info):
        try:
            menu(info)
        except HungUp:
            pass
