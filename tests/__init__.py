"""mqttkit's test suite.

A regular package (not a namespace one) on purpose: some distributions (gmqtt 0.8) install a
top-level ``tests`` package into site-packages, which would otherwise shadow this directory and
break ``from tests.support import ...``.
"""
