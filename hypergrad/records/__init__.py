"""Records of every run in an Optuna study: configuration, seed, values, curves, environment.

`Records.open(storage, study)` opens or creates a study (a SQLite file by default, a
journal file or any Optuna storage URL otherwise, PostgreSQL for workers on several
machines); `record_trial` runs one objective and records it; `reproduce` re-runs a
recorded trial and compares; `mask_secrets` keeps URL passwords out of what is printed.
"""

from ._distributions import to_optuna_distributions as to_optuna_distributions
from ._environment import environment as environment
from ._environment import same_machine as same_machine
from ._environment import worker as worker
from ._masking import mask_secrets as mask_secrets
from ._records import CLAIM_ATTR as CLAIM_ATTR
from ._records import EXACT_ATTR as EXACT_ATTR
from ._records import FORBIDDEN_ATTR as FORBIDDEN_ATTR
from ._records import FORMAT as FORMAT
from ._records import ORPHAN_AFTER_S as ORPHAN_AFTER_S
from ._records import WITHDRAWN_ATTR as WITHDRAWN_ATTR
from ._records import ClaimTakenError as ClaimTakenError
from ._records import Outcome as Outcome
from ._records import Records as Records
from ._records import quiet_optuna as quiet_optuna
from ._records import record_trial as record_trial
from ._records import reference as reference
from ._records import resolve as resolve
from ._records import trial_seed as trial_seed
from ._reproduce import Reproduction as Reproduction
from ._reproduce import reproduce as reproduce
from ._storage import IncompatibleRecordError as IncompatibleRecordError
from ._storage import RecordsError as RecordsError
from ._storage import StorageError as StorageError
from ._storage import StudyNotFoundError as StudyNotFoundError
from ._storage import describe_storage as describe_storage
from ._storage import open_storage as open_storage
