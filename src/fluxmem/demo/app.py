"""The Gradio page: a live camera, or an uploaded or recorded video; ask at any moment, watch the memory.

Each browser tab holds its own :class:`~fluxmem.demo.tab.TabSession` (a ``gr.State``), so tabs
never share frames, answers or caches; one lock around the shared model makes them take turns.
Frames enter the memory as the player advances (a timer reads the player's position while it
plays); a question first ingests up to the current playback position, so the answer is about the
video up to what the viewer has seen. The live camera (Gradio's streaming webcam input) sends frames
as they are captured; each enters the memory at once and the memory panel follows. Bad input (a file that is not a video, a video without
frames, a question before any frame) is answered with a message on the page; the server goes on.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading

from ..errors import FluxMemError
from .tab import TabSession, message

logger = logging.getLogger(__name__)

VIDEO_ID = "fluxmem-video"
CAMERA_ID = "fluxmem-camera"
# Reads the player's position in the browser and hands it to the handler as its first input
# (-1 when there is no player or it has no media loaded: the handler then uses the whole video).
PLAYBACK_JS = (
    "(position, ...rest) => {"
    f" const v = document.querySelector('#{VIDEO_ID} video');"
    " const t = (v && v.readyState > 0 && Number.isFinite(v.currentTime)) ? v.currentTime : -1;"
    " return [t, ...rest]; }"
)
ENDED_JS = "(position, ...rest) => [-1, ...rest]"
CSS = """
#fluxmem-overlay img { object-fit: contain; }
#fluxmem-status { min-height: 3em; }
"""
INTRO = """# FluxMem live demo
**Live camera:** start the webcam; every frame enters the model's memory as it arrives, and a question
is answered from everything the camera has shown so far. **Video:** upload a video (or record one) and
press play; frames enter the memory as the video plays, and a question is answered from the video
**up to the playback position** (seeking back does not remove what was already seen; *Start over* does). The panel below
shows the memory: visual tokens kept per tier and the latest grid steps, with the cells that TAS
dropped darkened and hatched and the SDC clusters outlined (white disc = anchor)."""


def _gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise FluxMemError("the demo needs Gradio: pip install 'fluxmem-video[demo]'.") from error
    return gr


def _position(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None


def build_demo(
    model,
    processor,
    *,
    config=None,
    fps: float = 1.0,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    max_new_tokens: int = 64,
    overlay_steps: int = 6,
    tick_seconds: float = 1.0,
):
    """The page as a ``gr.Blocks``; :func:`serve` launches it."""
    gr = _gradio()
    model_lock = threading.Lock()

    def new_tab() -> TabSession:
        return TabSession(
            model,
            processor,
            config=config,
            fps=fps,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            lock=model_lock,
            overlay_steps=overlay_steps,
            max_new_tokens=max_new_tokens,
        )

    def views(tab: TabSession):
        return tab.stats_markdown(), tab.overlay()

    def on_video(path, tab):
        tab = tab or new_tab()
        if not path:  # cleared (by the user, or below after a bad upload): the memory and messages stay
            return tab, gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
        try:
            status = tab.open(path)
        except Exception as error:  # keep the page alive whatever the decoder says
            if not isinstance(error, FluxMemError):
                logger.exception("loading %s failed", path)
            # the bad file leaves the player, so that the upload area comes back
            text = message(error).replace(str(path), os.path.basename(str(path)))  # not Gradio's temporary path
            return tab, f"**Cannot use this upload:** {text}", gr.update(), gr.update(), gr.update(), None
        return tab, status, *views(tab), [], gr.update()

    def on_camera_frame(frame, tab):
        tab = tab or new_tab()
        if frame is None:
            return tab, gr.update(), gr.update(), gr.update()
        try:
            started = not tab.live
            stepped = tab.push_live(frame)
        except FluxMemError as error:
            return tab, f"**Camera frame refused:** {message(error)}", gr.update(), gr.update()
        status_update = "Live camera: frames enter the memory as they arrive; ask at any moment." if started else gr.update()
        if stepped or started:
            return tab, status_update, *views(tab)
        return tab, status_update, gr.update(), gr.update()

    def on_tick(position, tab):
        if tab is None or tab.video is None:
            return gr.update(), gr.update()
        try:
            pushed = tab.ingest_until(_position(position))
        except FluxMemError as error:
            return f"**Reading the video failed:** {message(error)}", gr.update()
        return views(tab) if pushed else (gr.update(), gr.update())

    def on_ask(position, question, history, tab):
        tab = tab or new_tab()
        history = list(history or [])
        history.append({"role": "user", "content": question or ""})
        try:
            reply = tab.ask(question, _position(position))
            history.append({"role": "assistant", "content": reply.markdown()})
        except FluxMemError as error:
            history.append({"role": "assistant", "content": f"**Cannot answer yet:** {message(error)}"})
        except Exception as error:
            logger.exception("answering failed")
            history.append({"role": "assistant", "content": f"**Cannot answer:** {message(error)}"})
        return tab, history, "", *views(tab)

    def on_restart(tab):
        tab = tab or new_tab()
        try:
            status = tab.restart()
        except FluxMemError as error:
            status = f"**Cannot start over:** {message(error)}"
        return tab, status, *views(tab), []

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    styling = {"theme": theme, "css": CSS}
    styled_at_launch = "css" in inspect.signature(gr.Blocks.launch).parameters
    with gr.Blocks(title="FluxMem demo", analytics_enabled=False, **({} if styled_at_launch else styling)) as demo:
        tab_state = gr.State(None, time_to_live=6 * 3600, delete_callback=lambda tab: tab.close() if tab else None)
        position = gr.Number(value=-1, visible=False)
        timer = gr.Timer(tick_seconds, active=False)
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tabs():
                    with gr.Tab("Live camera", id="live"):
                        camera = gr.Image(label="Live camera", sources=["webcam"], streaming=True, type="numpy",
                                          elem_id=CAMERA_ID)
                    with gr.Tab("Video", id="video"):
                        video = gr.Video(label="Video", sources=["upload", "webcam"], include_audio=True, elem_id=VIDEO_ID)
                status = gr.Markdown("No video loaded.", elem_id="fluxmem-status")
                restart = gr.Button("Start over", variant="secondary", elem_id="fluxmem-restart")
            with gr.Column(scale=1):
                chat_kwargs = {"type": "messages"} if "type" in inspect.signature(gr.Chatbot.__init__).parameters else {}
                answers = gr.Chatbot(label="Questions and answers", height=360, elem_id="fluxmem-answers", **chat_kwargs)
                question = gr.Textbox(label="Question", placeholder="What is happening in the video?", elem_id="fluxmem-question")
                ask = gr.Button("Ask", variant="primary", elem_id="fluxmem-ask")
        with gr.Row():
            with gr.Column(scale=1):
                stats = gr.Markdown("**Memory:** empty. Upload a video or record one with the webcam.", elem_id="fluxmem-stats")
            with gr.Column(scale=2):
                overlay = gr.Image(label="Latest grid steps in memory", show_label=False, type="pil", interactive=False, elem_id="fluxmem-overlay")

        camera.stream(on_camera_frame, [camera, tab_state], [tab_state, status, stats, overlay],
                      stream_every=min(0.5, 0.5 / fps), time_limit=None, show_progress="hidden", concurrency_limit=None)
        video.change(on_video, [video, tab_state], [tab_state, status, stats, overlay, answers, video])
        video.play(lambda: gr.Timer(active=True), None, timer)
        video.pause(lambda: gr.Timer(active=False), None, timer)
        timer.tick(on_tick, [position, tab_state], [stats, overlay], js=PLAYBACK_JS, show_progress="hidden")
        video.end(on_tick, [position, tab_state], [stats, overlay], js=ENDED_JS)
        video.end(lambda: gr.Timer(active=False), None, timer)
        for trigger in (ask.click, question.submit):
            trigger(on_ask, [position, question, answers, tab_state], [tab_state, answers, question, stats, overlay], js=PLAYBACK_JS)
        restart.click(on_restart, [tab_state], [tab_state, status, stats, overlay, answers])
    demo._fluxmem_styling = styling if styled_at_launch else {}  # noqa: SLF001 - read back by serve()
    return demo


def serve(demo, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True, quiet: bool = False):
    """Start the server (``block=False`` returns at once, for tests); returns the page's URL."""
    gr = _gradio()
    options = dict(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=quiet, show_error=True)
    accepted = inspect.signature(gr.Blocks.launch).parameters
    if "ssr_mode" in accepted:
        options["ssr_mode"] = False  # no Node.js server
    options.update(getattr(demo, "_fluxmem_styling", {}))
    demo.queue(default_concurrency_limit=4)
    demo.launch(**{key: value for key, value in options.items() if key in accepted})
    return getattr(demo, "local_url", None) or f"http://{host}:{port}/"
