// The bot-sdk's crypto module reads its classes from the native binding when it loads;
// no test here constructs one. Any use fails loudly.
module.exports = new Proxy(
  {},
  {
    get(_target, name) {
      if (name === "__esModule" || typeof name === "symbol") return undefined;
      return function unavailable() {
        throw new Error(`the native matrix-sdk-crypto binding is not installed (${String(name)})`);
      };
    },
  },
);
