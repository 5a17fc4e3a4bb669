"""Output that breaks naive log streamers; every byte of it must come through as the contract says.

Invalid UTF-8, a NUL byte, CRLF and lone CR, a 1 MiB line, HTML and <script> text, ANSI
sequences, stderr interleaved, and a last line without a newline.
"""

from __future__ import annotations

import sys


def main() -> None:
    out, err = sys.stdout.buffer, sys.stderr.buffer
    out.write(b"plain ascii\n")
    out.write(b"invalid utf-8: \xff\xfe and a cut euro \xe2\x82\n")
    out.write(b"a NUL byte: [\x00]\n")
    out.write(b"windows line ending\r\n")
    out.write(b"progress 10%\rprogress 50%\rprogress 100%\n")
    out.write(b"<img src=x onerror=alert(1)> <script>alert('xss')</script> &amp; &lt;\n")
    out.write(
        b"\x1b[1;31mbold red\x1b[0m \x1b[38;5;208m256 orange\x1b[0m "
        b"\x1b[38;2;0;128;255m24-bit\x1b[0m\n"
    )
    out.write(b"\x1b]0;window title\x07cursor moves \x1b[2K\x1b[1Gerased\n")
    out.write(b"tab\tseparated\tcolumns\n")
    out.write("unicode line breaks stay: \x0b \x0c \x85 \u2028 \u2029 end\n".encode())
    out.flush()
    err.write(b"a line on stderr\n")
    err.flush()
    out.write(b"x" * (1 << 20) + b"\n")  # a 1 MiB line: split into pieces of the line limit
    out.write(b"no final newline")
    out.flush()


if __name__ == "__main__":
    main()
