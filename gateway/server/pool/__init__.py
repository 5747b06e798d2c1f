"""The gateway side of the compute pool: calls on ``pool = true`` routes go to providers
registered on the ledger, chosen per request, and each call pays its provider and the operator
in one split settle.

- ``preferences``: the request's OpenRouter-style ``provider`` object, parsed strictly;
- ``directory``: the providers in force, read from the ledger, reloaded when ``pool_version`` moves;
- ``health``: per-provider figures and circuit breakers; ``checker``: the background probes;
- ``routing``: the request's bounds, its candidates in order, and the hold they need;
- ``call``: the paid call itself (verify -> hold -> try candidates -> one split settle or void).

Nothing here prices a call: ``ledger.pool`` does, for the gateway and every auditor alike.
"""
