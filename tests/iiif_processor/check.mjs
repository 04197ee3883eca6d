// Runs serverless-iiif's image core (the npm package iiif-processor) against one pyramid TIFF,
// with the pyramid's dimensions derived from its store metadata exactly as serverless-iiif
// derives them, and answers each IIIF request given. Used by tests/test_iiif_processor.py.
//
// stdin: {"file": path, "metadata": {...}, "requests": ["info.json", "full/max/0/default.jpg"],
//         "out": folder}
// stdout: one JSON object: {"dimensions": [...], "geometry": {...}, "responses": [...]}, each
// response {request, type, contentType, body (a file under out), statusCode, message}.
import fs from "node:fs";
import path from "node:path";
import { Processor } from "iiif-processor";

// serverless-iiif 7.x (the release that runs iiif-processor 7): width, height and pages from the
// object's metadata; each level the full size divided by 2^n, rounded down; without pages, one
// level (the full one); without width and height, nothing (iiif-processor then reads the file).
function dimensionsV7(metadata) {
  if (!(metadata.width && metadata.height)) return null;
  const width = parseInt(metadata.width, 10);
  const height = parseInt(metadata.height, 10);
  const result = [{ width, height }];
  if (!metadata.pages) return result;
  const pages = parseInt(metadata.pages, 10);
  for (let page = 1; page < pages; page++) {
    const scale = 1 / 2 ** page;
    result.push({ width: Math.floor(width * scale), height: Math.floor(height * scale) });
  }
  return result;
}

// serverless-iiif 8.x (iiif-processor 8): each value from the bare name, else its iiif- name;
// the tile size from tilewidth/tileheight, else tilesize; levels as above from pages.
function geometryV8(metadata) {
  const number = (key) => {
    const value = metadata[key] || metadata[`iiif-${key}`];
    return value && !isNaN(Number(value)) ? Number(value) : undefined;
  };
  const geometry = {
    width: number("width"),
    height: number("height"),
    pages: number("pages"),
    tileWidth: number("tilewidth") || number("tilesize"),
    tileHeight: number("tileheight") || number("tilesize"),
  };
  const sizes = [{ width: geometry.width, height: geometry.height }];
  for (let page = 1; page < (geometry.pages || 1); page++) {
    const scale = 1 / 2 ** page;
    sizes.push({
      width: Math.floor(geometry.width * scale),
      height: Math.floor(geometry.height * scale),
    });
  }
  return { ...geometry, sizes };
}

async function answer(request, input, dimensions, index) {
  const url = `http://localhost/iiif/3/pyramid/${request}`;
  const processor = new Processor(url, async () => fs.createReadStream(input.file), {
    dimensionFunction: async () => dimensions,
  });
  try {
    const result = await processor.execute();
    if (result.type !== "content") return { request, ...result };
    const body = path.join(input.out, `${index}.${request.endsWith(".json") ? "json" : "jpg"}`);
    fs.writeFileSync(body, result.body);
    return { request, type: result.type, contentType: result.contentType, body };
  } catch (error) {
    return { request, type: "error", message: String(error && error.message) };
  }
}

const input = JSON.parse(fs.readFileSync(0, "utf8"));
const dimensions = dimensionsV7(input.metadata);
if (!dimensions) {
  console.error("check.mjs: the metadata has no width and height: nothing to test");
  process.exit(2);
}
const responses = [];
for (const [index, request] of input.requests.entries()) {
  responses.push(await answer(request, input, dimensions, index));
}
process.stdout.write(JSON.stringify({ dimensions, geometry: geometryV8(input.metadata), responses }));
