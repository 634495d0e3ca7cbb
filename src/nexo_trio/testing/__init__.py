"""The public test kit: a scripted fake ``claude`` and the scenarios it plays.

``nexo_trio.testing.fake_claude`` is the executable (stdlib only, fast to start);
``nexo_trio.testing.scenario`` builds scenarios and installs the fake in a directory.
"""
