#!/bin/sh
# docker-compose.yml's one-shot `init`: creates the queue, dead-letter queue,
# table and bucket with scripts/local_aws.py (the quickstart's set-up, the
# stack's shapes) and writes the sample file the origin serves. Safe to run
# again. scripts/check_deploy.py runs it against a local moto.
#
# Environment: QUEUE_NAME TABLE_NAME BUCKET LIFECYCLE_FILE SAMPLE_DIR SAMPLE_MIB
set -eu
here="$(dirname "$0")"
python "$here/local_aws.py" --lifecycle "$LIFECYCLE_FILE" "$BUCKET" "$QUEUE_NAME" "$TABLE_NAME"

sample="$SAMPLE_DIR/sample-$SAMPLE_MIB.bin"
if [ ! -f "$sample" ]; then
  head -c "$((SAMPLE_MIB * 1048576))" /dev/urandom >"$sample.part"
  mv "$sample.part" "$sample"
fi
echo "sample: http://origin/${sample##*/} sha256 $(sha256sum "$sample" | cut -d' ' -f1)"
