"""What each variant needs from the hub and the cloud shares, and fetching it.

Public entry points (import the module that holds them; nothing is imported here):

* ``hub.download.plan_download`` / ``run_download`` / ``verify_download``: the engine of
  ``cogvx download``;
* ``hub.manifest.WeightsLayout``: where each component lives in a downloaded folder
  (``component_path``, ``pipeline`` for diffusers, ``sat_checkpoint_file`` for SAT).
"""
