"""Scene analytics over a camera's tracks (issue 25): lines (tripwires) counted per direction, zones with
entries, exits, dwell, loitering and occupancy, and speeds from a ground calibration.

`SceneAnalytics` (scene.py) is one camera's: its `Line`s (lines.py) and `Zone`s (zones.py) over plane
geometry in frame pixels (geometry.py), speeds from a homography (speed.py); it returns `SceneEvent`s
(events.py) that edged.publish turns into MQTT messages. `LineCounts` (counts.py) holds the counts for
the whole daemon, for /metrics, /stats, the status page and Home Assistant. The layer imports config,
observability and the base types only: the runner (edged.pipeline) calls it with the tracker's output.
"""
