"""Real faces from photographs that ship inside packages, animated into talking videos
(`photos.py`: the photos and people; `animate.py`: one photo -> a talking clip; `clips.py`:
the source folder for `python -m gcm_jax.data.video_folder`; docs/data.md)."""
