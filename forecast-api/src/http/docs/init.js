// Swagger UI over this API's own OpenAPI document. Requests go to this origin: with a key given
// under "Authorize" (Bearer), or with the browser's own credentials for this origin.
"use strict";
window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  layout: "BaseLayout",
  presets: [SwaggerUIBundle.presets.apis],
  // No outside service is asked anything: the document is not sent to a validator.
  validatorUrl: null,
  // A key typed in stays in this page's memory only.
  persistAuthorization: false,
  displayRequestDuration: true,
  tryItOutEnabled: false,
});
