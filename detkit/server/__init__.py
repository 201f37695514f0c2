"""`detkit server web`: a JSON API and a local web page around one shared Detector.

Importing this package pulls in neither TensorFlow nor the web framework; `detkit.server.app` needs the
`web` extra (`pip install detkit[web]`).
"""
