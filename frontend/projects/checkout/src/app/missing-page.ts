import { Component } from '@angular/core';

/** Shown for a checkout link without a payment id. */
@Component({
  selector: 'pm-missing-page',
  template: `
    <main class="missing">
      <h1>This checkout link is incomplete</h1>
      <p>Go back to the shop and start the payment again.</p>
    </main>
  `,
  styles: `.missing { max-width: 28rem; margin: 4rem auto; padding: 0 1rem; }`,
})
export class MissingPage {}
