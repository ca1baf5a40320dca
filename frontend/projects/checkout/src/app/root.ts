import { Component } from '@angular/core';
import { RouterOutlet } from '@angular/router';

/** The checkout shell: one page per payment. */
@Component({
  selector: 'pm-checkout-root',
  imports: [RouterOutlet],
  template: `<router-outlet />`,
})
export class CheckoutRoot {}
