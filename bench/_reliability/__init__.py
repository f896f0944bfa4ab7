"""The reliability and security harness shared by ``tests/{security,fuzz,faults}`` (CI-sized runs)
and ``bench/reliability.py`` / ``bench/load.py`` (full runs): attack corpus, property fuzzers,
HTTP fuzzing of the gateway, a misbehaving upstream, process helpers. Underscored so that
``python -m bench`` does not list it as a benchmark."""
