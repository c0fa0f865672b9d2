"""Offline rebuild job (`vqrec rebuild --config rebuild.toml`): new embeddings -> codebooks (retrained,
or the active version's reused when the drift is small) -> index -> recall gate -> publish -> alias flip
-> optional notification of the service.

Steps, each recorded in ``{root}/{name}/.rebuild/state.json`` (hidden: the service and the store skip it)
together with a fingerprint of the inputs (embeddings, trainer config, drift threshold):

    train    codebooks saved to .rebuild/codebooks (reused from the active version when the relative
             reconstruction MSE of the new items under them exceeds the MSE of their own training report
             by at most ``drift.max_relative_mse_increase``, relative; the decision and both figures are
             logged, printed and stored in the new manifest under ``rebuild``)
    build    index built and evaluated against exact search on a sample of queries, saved to .rebuild/index
    gate     user->item recall@k must be >= ``gate.recall_floor`` and at most ``gate.max_drop`` below the
             active version's (from its manifest); otherwise nothing is published
    publish  the index copied into versions/ (staged under a hidden name and renamed: all or nothing)
    activate the alias flipped atomically (the old version becomes ``previous``); then prune, notify

With ``[distributed] ray = true`` (or ``vqrec rebuild --ray``) the encoding and the evaluation of the
build step run on Ray Data (index/distributed.py); training stays on the driver (on a sample, as
always). The artifact is the same byte for byte on the codes, and the evaluation report is identical.

One rebuild per name at a time: ``{root}/{name}/.rebuild.lock`` (flock) is held for the whole run; a
second run exits 7 at once.

The alias only changes in ``activate``, so a kill -9 at any earlier point leaves the active version served
and untouched. The next run resumes from the last completed step when the fingerprint matches; otherwise
it deletes the work directory and any version it had published but not activated. Interrupted store
stagings (``versions/.publish-*``) are removed under the store lock.

Exit codes (one meaning each):

    0  published and activated (or already up to date: the active version was built from these inputs)
    1  anything else (unexpected error)
    2  usage or config error (rebuild.toml)
    3  input error (embeddings missing, unreadable or of the wrong dimension)
    4  gate refused: recall under the floor or dropped more than max_drop (the message names the figures)
    5  publish or activate failed (the alias is unchanged)
    6  notify failed (the new version IS published and active; only the service was not told)
    7  another rebuild of this name is running (nothing done)

Test hook: ``VQREC_REBUILD_CRASH_AFTER=<point>`` ends the process with ``os._exit(137)`` (as kill -9
would) at one of: ``train`` (codebooks saved and recorded), ``mid-build`` (items encoded, nothing of the
index saved), ``build`` (index saved and recorded), ``mid-publish`` (one file copied into the store's
staging directory), ``publish`` (published, the alias not flipped).

Modules: ``config`` (RebuildConfig, the tables of rebuild.toml, ``load_rebuild_config``), ``state`` (the work
directory, state.json, the fingerprint, the crash hook, the lock, store stagings), ``steps`` (one function
per step, and ``run_rebuild`` running them in order), ``notify`` (the reload request), ``codes`` (EXIT_*).
"""

from vqrec.index.errors import RebuildError

from .codes import EXIT_BUSY, EXIT_CONFIG, EXIT_ERROR, EXIT_GATE, EXIT_INPUT, EXIT_NOTIFY, EXIT_OK, EXIT_PUBLISH
from .config import RebuildConfig, load_rebuild_config
from .notify import notify
from .state import CRASH_ENV, rebuild_lock
from .steps import drift_decision, run_rebuild

__all__ = [
    "CRASH_ENV",
    "EXIT_BUSY",
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_GATE",
    "EXIT_INPUT",
    "EXIT_NOTIFY",
    "EXIT_OK",
    "EXIT_PUBLISH",
    "RebuildConfig",
    "RebuildError",
    "drift_decision",
    "load_rebuild_config",
    "notify",
    "rebuild_lock",
    "run_rebuild",
]
