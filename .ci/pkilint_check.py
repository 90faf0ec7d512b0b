#!/usr/bin/env python3
"""Run pkilint's own command-line linters on many documents in one Python process.

Starting Python and importing pkilint costs about a second per document; the integration
tests lint some thirty documents, so this wrapper calls the `main()` of the installed
`lint_pkix_cert`, `lint_crl` and `lint_pkix_signer_signee_cert_chain` commands once per
document (the same code, arguments and output as the commands themselves) and prints one
JSON array. It does not judge anything: the caller (crates/twoway/tests/ca_issue.rs) decides
which findings fail the build.

Usage:
  pkilint_check.py SEVERITY DOC...
    SEVERITY  the -s threshold passed to pkilint (FATAL, ERROR, WARNING, NOTICE, INFO, ALL)
    DOC       cert:PATH            lint_pkix_cert lint PATH
              crl:PATH             lint_crl lint -t CRL -p PKIX PATH
              pair:ISSUER:SUBJECT  lint_pkix_signer_signee_cert_chain lint ISSUER SUBJECT

Output: [{"doc": DOC, "exit": N, "results": [...pkilint JSON results...]}, ...]
Exit: 0 when every document was linted (whatever the findings), 3 when pkilint is not
installed, 2 on a usage error or when pkilint could not load a document.
"""

import contextlib
import io
import json
import sys


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        from pkilint.bin import lint_crl, lint_pkix_cert, lint_pkix_signer_signee_cert_chain
    except ImportError as e:
        print(
            f"pkilint is not installed ({e}): install it with `pip install pkilint`",
            file=sys.stderr,
        )
        return 3
    severity, docs = argv[0], argv[1:]
    common = ["-s", severity, "-f", "JSON"]
    out = []
    for doc in docs:
        kind, _, rest = doc.partition(":")
        if kind == "cert":
            fn, args = lint_pkix_cert.main, ["lint", *common, rest]
        elif kind == "crl":
            fn, args = lint_crl.main, ["lint", "-t", "CRL", "-p", "PKIX", *common, rest]
        elif kind == "pair":
            issuer, _, subject = rest.partition(":")
            fn, args = lint_pkix_signer_signee_cert_chain.main, ["lint", *common, issuer, subject]
        else:
            print(f"unknown document kind in {doc!r}: use cert:, crl: or pair:", file=sys.stderr)
            return 2
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = fn(args)
        text = buf.getvalue().strip()
        try:
            results = json.loads(text)["results"]
        except (ValueError, KeyError):
            print(f"pkilint could not lint {doc} (exit {code}): {text}", file=sys.stderr)
            return 2
        out.append({"doc": doc, "exit": code, "results": results})
    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
