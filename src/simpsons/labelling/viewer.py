"""The preview window, run as its own Python by ``preview.Window``: ``python -m simpsons.labelling.viewer WIDTH``.

It prints ``ready`` once the window is up, then reads ``PNG path<TAB>title`` lines from its input and shows each
picture (small ones zoomed to about ``WIDTH`` pixels); it closes at end of input.
"""

from __future__ import annotations

import queue
import sys
import threading
import tkinter


def main(width: int) -> None:
    """Show the pictures named on standard input until it ends."""
    root = tkinter.Tk()
    label = tkinter.Label(root)
    label.pack()
    lines: queue.Queue[str | None] = queue.Queue()

    def read_input() -> None:
        for line in sys.stdin:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read_input, daemon=True).start()
    print("ready", flush=True)

    def poll() -> None:
        try:
            while True:
                line = lines.get_nowait()
                if line is None:
                    root.destroy()
                    return
                path, _, title = line.rstrip("\n").partition("\t")
                photo = tkinter.PhotoImage(file=path)
                photo = photo.zoom(max(1, width // photo.width()))
                label.configure(image=photo)
                label.image = photo
                root.title(title)
        except (queue.Empty, tkinter.TclError):
            root.after(50, poll)

    poll()
    root.mainloop()


if __name__ == "__main__":
    main(int(sys.argv[1]))
