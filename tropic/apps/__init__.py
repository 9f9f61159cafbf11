"""tropic's applications, apart from the library packages (``core``, ``backends``, ``autodiff``,
``torch``, ``nn``): they use the library and the library never imports them.

- :mod:`tropic.apps.cli`: the ``tropic`` command (also ``python -m tropic``);
- :mod:`tropic.apps.reproduce`: the small-scale reproductions of the papers' claims;
- :mod:`tropic.apps.bench`: the performance report (``tropic bench``), whose baselines and probes
  the asv suite in ``benchmarks/`` shares;
- :mod:`tropic.apps.datasets`: the data sets of ``tropic train`` and ``tropic reproduce``;
- :mod:`tropic.apps.plots`: their PNG plots.
"""
