"""The command line: `edged run | check-config | schema | install-models | make-sample | build-engine | doctor`."""
