"""Write the shipped real-text documents example: HTTP status codes as Python's standard library documents them
(``http.HTTPStatus``: each code's reason phrase and description, from the RFCs), one document per code that has a
description, two questions each (the reason phrase, the description). Written once with Python 3.11 to
``src/inweights/documents/http_status.jsonl``; later Pythons renamed a few phrases, so the file, not this script, is
the example.

    python examples/make_http_status.py > src/inweights/documents/http_status.jsonl
"""

import http
import json
import sys

CLASSES = {1: "an informational response", 2: "a success", 3: "a redirection", 4: "a client error",
           5: "a server error"}

for s in http.HTTPStatus:
    if not s.description:
        continue
    name = f"HTTP status {s.value}"
    desc = s.description.rstrip(".")
    text = (f"{name} is {CLASSES[s.value // 100]}. Its reason phrase is {s.phrase}. It means: {desc}.")
    questions = [{"question": f"What is the reason phrase of {name}?", "answer": s.phrase},
                 {"question": f"What does {name} mean, as its description says?", "answer": desc}]
    sys.stdout.write(json.dumps({"name": name, "text": text, "questions": questions}) + "\n")
