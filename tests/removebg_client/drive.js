// One call of the remove.bg npm client (remove.bg 1.3.0, MIT, Eddy Verbruggen) against another
// endpoint: tests/test_removebg_client.py runs it.
//
// stdin: {"call": "removeBackgroundFromImageFile" | "removeBackgroundFromImageBase64" |
//         "removeBackgroundFromImageUrl", "endpoint": "http://127.0.0.1:<port>/v1.0/removebg",
//         "options": {...the call's options, apiKey included}}
// stdout: {"resolved": <the client's result>} or {"rejected": <what it rejected with>}
//
// The client's dist/index.js is compiled from its installed source with only its API_ENDPOINT
// string replaced, so everything else (unirest, the options it sends, how it reads the answer)
// is the published package's own code.
"use strict";
const fs = require("fs");
const Module = require("module");
const path = require("path");

const ORIGINAL_ENDPOINT = '"https://api.remove.bg/v1.0/removebg"';

function loadClient(endpoint) {
    const filename = require.resolve("remove.bg");
    const source = fs.readFileSync(filename, "utf8");
    if (source.split(ORIGINAL_ENDPOINT).length !== 2) {
        throw new Error(`${filename}: expected ${ORIGINAL_ENDPOINT} exactly once`);
    }
    const client = new Module(filename, module);
    client.filename = filename;
    client.paths = Module._nodeModulePaths(path.dirname(filename));
    client._compile(source.replace(ORIGINAL_ENDPOINT, JSON.stringify(endpoint)), filename);
    return client.exports;
}

function plain(value) {
    // Error objects (a refused connection) have no enumerable fields: keep their message.
    return value instanceof Error ? { error: value.message } : value;
}

const job = JSON.parse(fs.readFileSync(0, "utf8"));
const client = loadClient(job.endpoint);
client[job.call](job.options).then(
    result => process.stdout.write(JSON.stringify({ resolved: result })),
    error => process.stdout.write(JSON.stringify({ rejected: plain(error) === undefined ? null : plain(error) })),
);
