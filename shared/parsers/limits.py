"""How big a document may be inside, whatever its size on disk.

A few hundred kilobytes of PDF can declare 100,000 pages or inflate to gigabytes of
text. Such a document is checked against these ceilings before the work it would
cause, and fails ``invalid_input`` on its first attempt, with a message that says
which ceiling, instead of holding a worker for half an hour or killing it until its
attempts run out.

Constants, not settings: they say what a sane document looks like, not how a
deployment is tuned; raise one here (and say why) if a real corpus needs it.
A wall-clock budget is deliberately absent: its verdict would depend on how busy the
machine is; the supervisor's stage deadline bounds time, and a death it causes is
charged to the document.
"""

from __future__ import annotations

# Large legitimate PDFs (bound law reports, full manuals, dictionaries) run to a few
# thousand pages; 20,000 leaves a wide margin. A text page parses in ~0.8 ms here
# (measured on profiling.generators' ~4,000-character A4 pages), so the ceiling keeps
# a document's parse to tens of seconds and its text to ~80 M characters; the PDF of
# 100,000 blank pages from issue 16 had stayed in ``parsing`` for over 25 minutes.
MAX_PDF_PAGES = 20_000

# A dense A4 page of 10 pt text holds ~4,000 characters (the same measurement); a
# page claiming 250 times that is a stream bomb, not prose. Checked from PDFium's
# character count before the text is copied out of it.
MAX_PDF_PAGE_CHARS = 1_000_000

# DOCX and PPTX are zip archives of XML. The zip's central directory says, before
# anything is inflated, how many entries there are and how big each becomes; zipfile
# then refuses to inflate an entry past its declared size (and checks its CRC), so a
# check of the directory bounds the work. A long report's word/document.xml is a few
# MB and a deck of hundreds of slides has a few thousand entries.
MAX_ZIP_ENTRIES = 10_000
# The central directory is read whole by zipfile (as ~0.5 KB of Python per entry);
# 64 bytes a name is generous for MAX_ZIP_ENTRIES.
MAX_ZIP_DIRECTORY_BYTES = MAX_ZIP_ENTRIES * 128
# XML the parser reads (the main part, styles, slides and their relationships).
# Parsing streams, so memory does not grow with it; this bounds time (36 MB of
# document.xml, 100,000 paragraphs, parsed in 5-10 s on the 2-core dev machine) and
# the text it can yield, like MAX_PDF_PAGES does for PDFs.
MAX_OFFICE_XML_BYTES = 256 * 1024 * 1024
# Deflate peaks near 1030:1; verbose but real XML compresses 5-30:1 and repetitive
# generated tables reach ~100:1. Applied to parts past MIN_RATIO_CHECK_BYTES only,
# where a bomb would start to cost something.
MAX_ZIP_RATIO = 200
MIN_RATIO_CHECK_BYTES = 1024 * 1024
