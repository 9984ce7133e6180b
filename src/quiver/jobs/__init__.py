"""Jobs: long work (training, batch prediction) run in worker processes with a time limit.

- :mod:`quiver.jobs.context`: the job as seen from inside the process that runs it (the token
  naming its temporary files, the critical sections a cancel must not cut); a no-op outside a
  worker, so the CLI and the SDK run the same code unchanged.
- :mod:`quiver.jobs.runner`: :class:`~quiver.jobs.runner.JobRunner`, used by the REST server to
  run a job in a worker process, wait for it, and kill it when its time runs out, its client
  goes away or the server stops; what a killed job leaves is cleaned up.
- :mod:`quiver.jobs.kinds`: the jobs a worker can run, and what to clean up after each.
- :mod:`quiver.jobs.worker`: the worker process's main loop.
"""
