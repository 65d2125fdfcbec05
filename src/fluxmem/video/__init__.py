"""Video input for fluxmem: Qwen-compatible preprocessing, real-time sampling, PyAV decoding, live sources.

* `process_vision_info(messages, return_video_kwargs=True)` - drop-in for qwen-vl-utils; feed its
  output to `Qwen2_5_VLProcessor(..., **video_kwargs)`. Extra per-video option `"anchor_end": True`.
* `realtime_frame_indices` / `offline_frame_indices` / `sampled_fps` - the samplers, pure.
* `probe_video` / `decode_frames` - file metadata and selective decoding.
* `open_source` - `(frame, timestamp)` streams from files, cameras, URLs or arrays.
"""

from .decode import DecodedVideo, VideoInfo, decode_frames, decode_progress, probe_video
from .sampling import FRAME_FACTOR, offline_frame_indices, realtime_frame_indices, sampled_fps
from .sources import FrameSource, open_source
from .vision import VideoClip, extract_vision_info, fetch_video, process_vision_info

__all__ = [
    "FRAME_FACTOR",
    "DecodedVideo",
    "FrameSource",
    "VideoClip",
    "VideoInfo",
    "decode_frames",
    "decode_progress",
    "extract_vision_info",
    "fetch_video",
    "offline_frame_indices",
    "open_source",
    "probe_video",
    "process_vision_info",
    "realtime_frame_indices",
    "sampled_fps",
]
