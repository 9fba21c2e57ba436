"""Interpreter speed: Triton's interpreter re-patches triton.language on
every call of a nested @triton.jit function (about a millisecond each).
Those patches are never undone (only a kernel launch's own patches are
restored, and every launch makes them again), so a nested function needs
them once: later calls skip the repeat. About a third of the backward
tests' time; the results do not change."""
import pytest


@pytest.fixture(autouse=True, scope="session")
def _nested_calls_patch_once():
    try:
        from triton.runtime import interpreter
    except ImportError:
        yield
        return
    cls = getattr(interpreter, "InterpretedFunction", None)
    if cls is None or not all(hasattr(x, a) for x, a in [(cls, "rewrite"), (interpreter, "_patch_lang"),
                                                        (interpreter, "InterpreterError")]):
        yield  # another Triton: leave it as it is
        return
    original = cls.__call__
    patched = set()

    def call(self, *args, **kwargs):
        if self.fn not in patched:
            interpreter._patch_lang(self.fn)
            patched.add(self.fn)
        fn = self.rewrite()
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise interpreter.InterpreterError(repr(e)) from e

    cls.__call__ = call
    try:
        yield
    finally:
        cls.__call__ = original
