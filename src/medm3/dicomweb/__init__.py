"""DICOMweb (PACS) access: read studies with QIDO-RS/WADO-RS, store results with STOW-RS.

* :mod:`~medm3.dicomweb.url`: ``dicomweb+https://HOST/ROOT/studies/UID[/series/UID]`` references;
* :mod:`~medm3.dicomweb.config`: credentials and TLS settings (environment or config file);
* :mod:`~medm3.dicomweb.client`: the ``dicomweb-client`` connection and one-line errors;
* :mod:`~medm3.dicomweb.query`: searches and the choice of one image series (limits checked);
* :mod:`~medm3.dicomweb.fetch`: the instance cache and the ``dicomweb`` image source of
  ``load_image`` (:mod:`medm3.imaging.sources`);
* :mod:`~medm3.dicomweb.store`: STOW-RS of DICOM-SEG and SR results, all or nothing.

Everything but :mod:`~medm3.dicomweb.url` imports ``dicomweb-client`` (the
``dicomweb`` extra) when used.
"""

from medm3.dicomweb.url import PREFIX, DicomwebRef, is_dicomweb_reference, parse_reference

__all__ = ["PREFIX", "DicomwebRef", "is_dicomweb_reference", "parse_reference"]
