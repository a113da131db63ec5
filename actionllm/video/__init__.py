"""Video data for the video recipes (LVLM-VAR): decoding and frame sampling (decode.py), the stick-figure
renderer that turns skeleton shards into MP4 clips (render.py), and video shards prepared from a folder of
clips (folder.py). See docs/video.md. Nothing here imports Ray."""
