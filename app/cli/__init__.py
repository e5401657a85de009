"""The command line, ``bgremove`` (``[project.scripts]``): one image, a folder, a bucket across a
Cloud Run Jobs fleet, or a running service, on the service's own pipeline. No Flask here.

- :mod:`app.cli.main`: the commands (click), settings from flags, a file and the environment;
- :mod:`app.cli.flags`: the result options, derived from the walk over the option declarations;
- :mod:`app.cli.batch`: the batch engine (walk, sharding, manifest, resuming, atomic writes);
- :mod:`app.cli.storage`: local folders and ``gs://`` prefixes behind one interface;
- :mod:`app.cli.local`: the pipeline in this process or a worker process;
- :mod:`app.cli.remote`: ``--server``, the service over HTTP with its backpressure honoured.
"""
