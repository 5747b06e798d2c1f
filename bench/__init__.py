"""inferpay's benchmark (``python -m bench.run``, ``make bench``): ratios measured in one run.

Every figure is a ratio of two things measured in the same run on the same machine, so a noisy
or slower machine does not change the verdict; the absolute numbers are reported beside it.
Benchmarks live apart from the tests and never decide whether the test suite passes. Nothing
here changes the code it measures: it drives ``ledger``, ``wallets`` and ``gateway`` through
their public entry points (the ``inferpay gateway`` command, ``Ledger``, ``audit``).
``--database postgresql://...`` measures P1 and P2 with the ledger in PostgreSQL, with one and
with two gateway (or writer) processes on it (``bench.p1_postgres``, ``bench.p2_postgres``).
"""
