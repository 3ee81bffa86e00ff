"""The report card: one self-contained HTML page per evaluation (or prediction) run.

    DIR/eval/<split>_card/index.html

Header (config, checkpoint step, split, the metric table beside the baselines, training curves),
per-keyword clinical scores with the most-confused pairs, and cases: radiograph, reference and
generated report side by side with the labeler's keyword spans coloured, and for every generated
word the last decoder layer's cross-attention over the image.

  attention.py    the teacher-forced pass that reads the cross-attention maps
  curves.py       TensorBoard scalars read back and drawn with matplotlib (inline SVG)
  spans.py        the labeler's spans, coloured match / miss / false finding / negated; words of
                  generated tokens
  cases.py        per-case clinical F1, which cases to show, the confusion counts
  html_page.py    the page's HTML
  page_assets.py  its CSS and inline JavaScript
  build.py        what --mode=eval --card and --mode=predict --card_dir call
"""
