"""Equality by configuration for the library's strategy objects (methods, linear solvers).

Two objects of one class with equal public attributes are interchangeable: they compare
equal and hash alike, so compiled programs cached on them (`jax.jit` static arguments,
`tune.descend`'s step cache) are reused instead of recompiled. An object holding an
unhashable attribute (an array) falls back to identity.
"""


class ConfigEquality:
    def _config(self):
        return tuple(sorted((k, v) for k, v in vars(self).items() if not k.startswith("_")))

    def _hashable_config(self):
        config = self._config()
        try:
            hash(config)
        except TypeError:
            return None
        return config

    def __eq__(self, other):
        if type(self) is not type(other):
            return NotImplemented
        mine, theirs = self._hashable_config(), other._hashable_config()
        if mine is None or theirs is None:
            return self is other
        return mine == theirs

    def __hash__(self):
        config = self._hashable_config()
        return id(self) if config is None else hash((type(self), config))
