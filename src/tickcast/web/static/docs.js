// /docs: Swagger UI on /openapi.json, everything served by tickcast itself (no CDN).
// URLs are relative to the page, so the page also works behind a path prefix.
window.ui = SwaggerUIBundle({
  url: new URL("openapi.json", document.baseURI).href,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  presets: [SwaggerUIBundle.presets.apis],
  deepLinking: true,
  displayRequestDuration: true,
  showExtensions: true,
  // No badge from the online validator: the page must not reach outside the server.
  validatorUrl: null,
});
