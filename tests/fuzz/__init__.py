"""Fuzzing of the sans-IO session: the target and its invariants (``harness``), the bounded CI run
(``test_fuzz_session``); the long run is ``python tools/fuzz.py --minutes 10``."""
