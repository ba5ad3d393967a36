// Signs Knox JWTs with Samsung's knox-token-library-js, used exactly as published (see package-lock.json).
// Reads one JSON object on stdin:
//   {"keysFile": "<path to keys.json>", "clientIdentifier": "<optional>", "accessToken": "<optional>"}
// and prints one JSON object on stdout:
//   {"publicKey": "<base64 SPKI>", "clientIdentifierJwt": "<JWT>", "accessTokenJwt": "<JWT>"}
// with a JWT for each input given. The library takes a file name, not the key itself, hence keysFile.
'use strict';

const knox = require('knox-token-library-js');

function main(input) {
  const request = JSON.parse(input);
  const out = { publicKey: knox.generateBase64EncodedStringPublicKey(request.keysFile) };
  if (request.clientIdentifier !== undefined) {
    out.clientIdentifierJwt = knox.generateSignedClientIdentifierJWT(request.keysFile, request.clientIdentifier);
  }
  if (request.accessToken !== undefined) {
    out.accessTokenJwt = knox.generateSignedAccessTokenJWT(request.keysFile, request.accessToken);
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

const chunks = [];
process.stdin.on('data', (chunk) => chunks.push(chunk));
process.stdin.on('end', () => main(Buffer.concat(chunks).toString('utf8')));
