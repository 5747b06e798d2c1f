"""The reliability suite: inferpay attacked the way trusted systems are tested, with figures.

``python -m reliability --quick | --full`` (``make reliability-quick`` / ``make reliability``)
runs, against one real deployment (``reliability.deploy``: the gunicorn gateway, the test
upstreams, a SQLite ledger), the phases described in docs/reliability.md:

- ``bank``: Jepsen's bank workload over HTTP (``reliability.workload``), every client outcome held
  against the ledger (``reliability.checks``);
- ``crash`` and ``clock``: the same under a nemesis (``reliability.faults``) that SIGKILLs the
  gateway and the upstreams and steps the clock (``reliability.clock``);
- ``attacks``: replays, forgeries and a lying gateway (``reliability.attacks``, ``reliability.mitm``);
- ``fuzz``: schemathesis and Hypothesis on every parser (``reliability.fuzz``);
- ``tamper``: the ledger file edited, truncated, rewritten, rolled back (``reliability.tamper``);
- ``bank-pg``: the bank workload through two gateways sharing one PostgreSQL ledger, on a
  deployment of its own in a throwaway schema (``reliability.pg``).

Each run writes ``reliability/out/report.json`` (``reliability.report``). The suite only reads
and attacks: it never imports the gateway's server code into its own process, and never changes
the code it tests.
"""
